"""The streaming job: Kafka ratings in, fresh top-N lists in Redis out (Spark)."""
