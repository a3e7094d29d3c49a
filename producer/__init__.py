"""The producer: MovieLens (or a synthetic feed) replayed into Kafka in timestamp order."""
