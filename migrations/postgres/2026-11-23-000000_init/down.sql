DROP TABLE production_orders;
DROP TABLE decisions;
DROP TABLE chain_outbox;
DROP TABLE day_reports;
DROP TABLE production_units;
DROP TABLE kafka_tokens;
