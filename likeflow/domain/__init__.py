"""Pure domain logic (affinity, ranking, guards, prompt copy): no Faust, Kafka or Redis imports."""
