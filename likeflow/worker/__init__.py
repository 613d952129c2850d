"""The worker process: the Faust app, batch delivery, Faust adaptations, web, monitor, watchdog."""
