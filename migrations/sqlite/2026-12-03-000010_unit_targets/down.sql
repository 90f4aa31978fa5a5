DROP TABLE unit_targets;
