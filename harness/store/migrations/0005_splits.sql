-- Held-out splits: a run records the split of its suite it evaluated (NULL for the whole
-- suite, and for every run made before splits existed); a loop records which split it
-- mined and which it decided on, and whether the harness made the split itself.

ALTER TABLE runs ADD COLUMN split VARCHAR;

ALTER TABLE loops ADD COLUMN mining_split VARCHAR;
ALTER TABLE loops ADD COLUMN heldout_split VARCHAR;
ALTER TABLE loops ADD COLUMN split_auto BOOLEAN;
ALTER TABLE loops ADD COLUMN split_sizes JSON;       -- split name -> samples

-- eval_run_id is the held-out split's run (decisions use it); mining_run_id the mining
-- split's run, whose failures the next iteration clusters. NULL for loops made before
-- splits existed, where eval_run_id evaluated the whole suite.
ALTER TABLE iterations ADD COLUMN mining_run_id INTEGER;
