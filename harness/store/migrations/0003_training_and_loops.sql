-- Training runs, and improvement loops whose iterations link evaluation, clusters,
-- data, training and the decision taken.

CREATE SEQUENCE training_ids START 1;

CREATE TABLE training_runs (
    training_id            INTEGER PRIMARY KEY DEFAULT nextval('training_ids'),
    trainer                VARCHAR NOT NULL,
    args                   JSON NOT NULL,
    manifest_hash          VARCHAR,           -- the dataset trained on
    base_path              VARCHAR NOT NULL,
    base_adapter           VARCHAR,           -- an adapter training continued from
    base_checkpoint_hash   VARCHAR NOT NULL,
    output_path            VARCHAR NOT NULL,
    output_checkpoint      JSON,              -- the ModelSpec to evaluate
    output_checkpoint_hash VARCHAR,
    tokens_trained         BIGINT,
    response_tokens        BIGINT,
    padding_share          DOUBLE,
    tokens_per_second      DOUBLE,
    wall_time_s            DOUBLE,
    steps                  INTEGER,
    epochs                 DOUBLE,
    best_step              INTEGER,
    stopped_early          BOOLEAN,
    resumed                BOOLEAN,
    train_examples         INTEGER,
    validation_examples    INTEGER,
    details                JSON,
    status                 VARCHAR NOT NULL,  -- running | completed | failed
    error                  VARCHAR,
    started_at             TIMESTAMP NOT NULL,
    finished_at            TIMESTAMP
);

CREATE TABLE training_curves (
    training_id   INTEGER NOT NULL,
    step          INTEGER NOT NULL,
    split         VARCHAR NOT NULL,          -- train | validation
    loss          DOUBLE,
    learning_rate DOUBLE,
    PRIMARY KEY (training_id, split, step)
);

CREATE SEQUENCE loop_ids START 1;

CREATE TABLE loops (
    loop_id       INTEGER PRIMARY KEY DEFAULT nextval('loop_ids'),
    fingerprint   VARCHAR NOT NULL,          -- resume key: suite, model and settings
    suite_name    VARCHAR NOT NULL,
    guard_suite   VARCHAR,                   -- the general suite that guards against forgetting
    base_model    VARCHAR NOT NULL,
    config        JSON NOT NULL,
    output_dir    VARCHAR NOT NULL,
    status        VARCHAR NOT NULL,          -- running | finished | failed
    final_iteration INTEGER,                 -- the iteration whose checkpoint the loop keeps
    stop_reason   VARCHAR,
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP
);

CREATE TABLE iterations (
    loop_id          INTEGER NOT NULL,
    iteration        INTEGER NOT NULL,       -- 0 evaluates the starting checkpoint
    step             VARCHAR NOT NULL,       -- the last step finished (resume point)
    checkpoint       JSON NOT NULL,          -- the ModelSpec evaluated in this iteration
    checkpoint_hash  VARCHAR,
    eval_run_id      INTEGER,
    guard_run_id     INTEGER,
    clustering_id    INTEGER,                -- clusters of the previous checkpoint's failures
    manifest_hash    VARCHAR,                -- the dataset trained on to make this checkpoint
    training_id      INTEGER,
    compared_to      INTEGER,                -- the iteration this one was compared with
    comparison       JSON,                   -- per metric and per cluster
    decision         VARCHAR,                -- baseline | continue | target_met | no_gain | rollback | last
    reason           VARCHAR,
    accepted         BOOLEAN,                -- whether the loop kept this checkpoint
    tokens_trained   BIGINT,
    tokens_evaluated BIGINT,
    cost             JSON,
    started_at       TIMESTAMP NOT NULL,
    finished_at      TIMESTAMP,
    PRIMARY KEY (loop_id, iteration)
);
