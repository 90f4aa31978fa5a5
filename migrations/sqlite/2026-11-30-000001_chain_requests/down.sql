DROP TABLE chain_scans;
DROP TABLE chain_requests;
