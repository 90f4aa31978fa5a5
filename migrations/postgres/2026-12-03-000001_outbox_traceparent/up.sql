-- The W3C traceparent of the work that enqueued a row (an operator's HTTP request,
-- a scheduled run): the relay's Kafka record continues that trace.
ALTER TABLE chain_outbox ADD COLUMN traceparent TEXT;
