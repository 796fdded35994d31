-- The session's sparkfleet.* confs (JSON object), consumed by the gateway and never sent to Spark.
ALTER TABLE sessions ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
