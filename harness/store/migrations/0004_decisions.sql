-- Decisions a statistician would sign: which samples a run resamples together, and the
-- rule each loop decision was taken under.

-- The suite's cluster_by when the run was made (NULL: the rows' group, as before).
ALTER TABLE runs ADD COLUMN cluster_by VARCHAR;

-- The decision rule of harness.loop.DECISION_RULE the iteration was decided under.
-- NULL: decided before rules were numbered (rule 1: paired tests over samples, a guard
-- that rolls back only on a significant drop, no multiplicity correction).
ALTER TABLE iterations ADD COLUMN decision_rule INTEGER;
