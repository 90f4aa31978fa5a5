DROP INDEX decisions_correlation_id;
