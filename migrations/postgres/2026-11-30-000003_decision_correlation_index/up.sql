-- A late reply finds its decision by the correlation id the request was sent with.
CREATE INDEX decisions_correlation_id ON decisions (correlation_id);
