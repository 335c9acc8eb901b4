-- Error clusters of a run's failing samples, and the training datasets built for them.

CREATE SEQUENCE clustering_ids START 1;

CREATE TABLE clusterings (
    clustering_id       INTEGER PRIMARY KEY DEFAULT nextval('clustering_ids'),
    run_id              INTEGER NOT NULL,
    featurizer          VARCHAR NOT NULL,
    featurizer_args     JSON NOT NULL,
    clusterer           VARCHAR NOT NULL,
    clusterer_args      JSON NOT NULL,
    n_failures          INTEGER NOT NULL,
    n_clusters          INTEGER NOT NULL,
    unclustered         INTEGER NOT NULL,  -- failures in no cluster (cluster_id -1)
    previous_clustering INTEGER,           -- the clustering this one was matched against
    created_at          TIMESTAMP NOT NULL
);

CREATE TABLE clusters (
    clustering_id  INTEGER NOT NULL,
    cluster_id     INTEGER NOT NULL,       -- -1 gathers the failures no cluster took
    label          VARCHAR NOT NULL,
    top_terms      VARCHAR[] NOT NULL,
    dominant_issue VARCHAR,
    tags           VARCHAR[] NOT NULL,
    size           INTEGER NOT NULL,
    mean_score     DOUBLE,
    score_metric   VARCHAR,
    examples       VARCHAR[] NOT NULL,     -- representative sample ids, nearest the centre first
    reasons        JSON NOT NULL,          -- failure reason -> count among members
    PRIMARY KEY (clustering_id, cluster_id)
);

CREATE TABLE cluster_members (
    clustering_id INTEGER NOT NULL,
    cluster_id    INTEGER NOT NULL,
    sample_id     VARCHAR NOT NULL,
    distance      DOUBLE NOT NULL,         -- to the cluster's centre in feature space
    PRIMARY KEY (clustering_id, sample_id)
);

-- How each cluster of the previous clustering fared, and which current clusters are new.
CREATE TABLE cluster_changes (
    clustering_id      INTEGER NOT NULL,
    previous_clustering INTEGER NOT NULL,
    previous_cluster   INTEGER,            -- NULL: the current cluster appeared
    cluster_id         INTEGER,            -- NULL: the previous cluster vanished
    previous_size      INTEGER,
    size               INTEGER,
    still_failing      INTEGER,            -- previous members that fail in this run
    overlap            DOUBLE,             -- |shared members| / min(sizes)
    change             VARCHAR NOT NULL    -- appeared | vanished | shrank | grew | unchanged
);

-- A dataset manifest: the full set of training rows at one point, content-addressed.
CREATE TABLE datasets (
    manifest_hash   VARCHAR PRIMARY KEY,
    parent_hash     VARCHAR,               -- the dataset this one grew from
    run_id          INTEGER,
    clustering_id   INTEGER,
    selection       VARCHAR NOT NULL,      -- targeted | random | import | replay
    sources         JSON NOT NULL,         -- source -> rows added
    cluster_counts  JSON NOT NULL,         -- cluster id -> rows added
    dropped         JSON NOT NULL,         -- reason -> rows dropped by curation
    decontaminated_against JSON NOT NULL,  -- suite names and hashes
    n_rows          INTEGER NOT NULL,
    n_added         INTEGER NOT NULL,
    path            VARCHAR,               -- the manifest written as JSONL
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE dataset_rows (
    manifest_hash VARCHAR NOT NULL,
    position      INTEGER NOT NULL,
    row_hash      VARCHAR NOT NULL,
    instruction   VARCHAR NOT NULL,
    input         VARCHAR NOT NULL,
    output        VARCHAR NOT NULL,
    source        VARCHAR NOT NULL,
    cluster       INTEGER,
    provenance    JSON,
    PRIMARY KEY (manifest_hash, position)
);
