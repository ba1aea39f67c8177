-- 0019: the journey scheduler takes a run's due steps in one transaction with the others it took (on
-- PostgreSQL locking them, SKIP LOCKED): nothing of a run outlives a transaction, so the lease a host
-- held over its separate transactions is gone.
ALTER TABLE journey_runs DROP COLUMN lease_until;
