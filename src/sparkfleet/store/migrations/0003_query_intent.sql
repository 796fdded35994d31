-- What a query does to the outside world ("read", "append write to table t", ...): decides whether
-- it may be re-run after its cluster is lost, also after a gateway restart.
ALTER TABLE queries ADD COLUMN intent TEXT NOT NULL DEFAULT '';
