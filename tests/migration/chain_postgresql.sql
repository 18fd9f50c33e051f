CREATE TABLE programma_jobs (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    topic TEXT NOT NULL, 
    data JSONB NOT NULL, 
    attributes JSONB DEFAULT '{}'::jsonb NOT NULL, 
    state VARCHAR(16) DEFAULT 'created' NOT NULL, 
    start_after TIMESTAMP WITH TIME ZONE DEFAULT now(), 
    started_at TIMESTAMP WITH TIME ZONE, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    retry_after_seconds INTEGER DEFAULT 30, 
    attempts INTEGER DEFAULT 0 NOT NULL, 
    CONSTRAINT programma_jobs_pkey PRIMARY KEY (id), 
    CONSTRAINT ck_programma_jobs_state CHECK (state IN ('created', 'active', 'processing', 'completed', 'failed'))
);

CREATE INDEX ix_programma_jobs_claim ON programma_jobs (topic, start_after, id) WHERE state IN ('created', 'active');

CREATE INDEX ix_programma_jobs_finished ON programma_jobs (topic, finished_at) WHERE state IN ('completed', 'failed');

CREATE INDEX IF NOT EXISTS ix_programma_jobs_processing ON programma_jobs (topic, started_at) WHERE state = 'processing';

CREATE INDEX IF NOT EXISTS ix_programma_jobs_failed ON programma_jobs (topic, finished_at) WHERE state = 'failed';

ALTER TABLE programma_jobs SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02);

ALTER TABLE programma_jobs ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0, ADD COLUMN IF NOT EXISTS unique_key text, ADD COLUMN IF NOT EXISTS unique_states text[];

CREATE UNIQUE INDEX uq_programma_jobs_unique_key ON programma_jobs (unique_key) WHERE state = ANY (unique_states);

CREATE INDEX ix_programma_jobs_claim_new ON programma_jobs (topic, priority DESC, start_after, id) WHERE state IN ('created', 'active');

DROP INDEX IF EXISTS ix_programma_jobs_claim;

ALTER INDEX ix_programma_jobs_claim_new RENAME TO ix_programma_jobs_claim;

ALTER TABLE programma_jobs DROP CONSTRAINT ck_programma_jobs_state;

ALTER TABLE programma_jobs ADD CONSTRAINT ck_programma_jobs_state CHECK (state IN ('created', 'active', 'processing', 'completed', 'failed', 'cancelled'));

ALTER TABLE programma_jobs ADD COLUMN result JSONB;

CREATE TABLE programma_jobs_paused (
    topic TEXT NOT NULL, 
    paused_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT programma_jobs_paused_pkey PRIMARY KEY (topic)
);

CREATE INDEX IF NOT EXISTS ix_programma_jobs_cancelled ON programma_jobs (topic, finished_at) WHERE state = 'cancelled';

CREATE INDEX IF NOT EXISTS ix_programma_jobs_history ON programma_jobs (topic, id) WHERE state IN ('completed', 'failed', 'cancelled');

DROP INDEX ix_programma_jobs_history;

DROP INDEX ix_programma_jobs_cancelled;

DROP TABLE programma_jobs_paused;

ALTER TABLE programma_jobs DROP COLUMN result;

UPDATE programma_jobs SET state='failed', attributes=(programma_jobs.attributes || CAST('{"cancelled": true}' AS JSONB)) WHERE programma_jobs.state = 'cancelled';

ALTER TABLE programma_jobs DROP CONSTRAINT ck_programma_jobs_state;

ALTER TABLE programma_jobs ADD CONSTRAINT ck_programma_jobs_state CHECK (state IN ('created', 'active', 'processing', 'completed', 'failed'));

DROP INDEX uq_programma_jobs_unique_key;

CREATE INDEX ix_programma_jobs_claim_new ON programma_jobs (topic, start_after, id) WHERE state IN ('created', 'active');

DROP INDEX IF EXISTS ix_programma_jobs_claim;

ALTER INDEX ix_programma_jobs_claim_new RENAME TO ix_programma_jobs_claim;

ALTER TABLE programma_jobs DROP COLUMN unique_states, DROP COLUMN unique_key, DROP COLUMN priority;

ALTER TABLE programma_jobs RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor);

DROP INDEX ix_programma_jobs_failed;

DROP INDEX ix_programma_jobs_processing;

DROP TABLE programma_jobs;

CREATE SCHEMA IF NOT EXISTS queue;

CREATE SCHEMA IF NOT EXISTS queue;

CREATE TABLE queue.audit_jobs (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    topic TEXT NOT NULL, 
    data JSONB NOT NULL, 
    attributes JSONB DEFAULT '{}'::jsonb NOT NULL, 
    state VARCHAR(16) DEFAULT 'created' NOT NULL, 
    start_after TIMESTAMP WITH TIME ZONE DEFAULT now(), 
    started_at TIMESTAMP WITH TIME ZONE, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    retry_after_seconds INTEGER DEFAULT 30, 
    attempts INTEGER DEFAULT 0 NOT NULL, 
    CONSTRAINT audit_jobs_pkey PRIMARY KEY (id), 
    CONSTRAINT ck_audit_jobs_state CHECK (state IN ('created', 'active', 'processing', 'completed', 'failed'))
);

CREATE INDEX ix_audit_jobs_claim ON queue.audit_jobs (topic, start_after, id) WHERE state IN ('created', 'active');

CREATE INDEX ix_audit_jobs_finished ON queue.audit_jobs (topic, finished_at) WHERE state IN ('completed', 'failed');

CREATE INDEX IF NOT EXISTS ix_audit_jobs_processing ON queue.audit_jobs (topic, started_at) WHERE state = 'processing';

CREATE INDEX IF NOT EXISTS ix_audit_jobs_failed ON queue.audit_jobs (topic, finished_at) WHERE state = 'failed';

ALTER TABLE queue.audit_jobs SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02);

ALTER TABLE queue.audit_jobs ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0, ADD COLUMN IF NOT EXISTS unique_key text, ADD COLUMN IF NOT EXISTS unique_states text[];

CREATE UNIQUE INDEX uq_audit_jobs_unique_key ON queue.audit_jobs (unique_key) WHERE state = ANY (unique_states);

CREATE INDEX ix_audit_jobs_claim_new ON queue.audit_jobs (topic, priority DESC, start_after, id) WHERE state IN ('created', 'active');

DROP INDEX IF EXISTS queue.ix_audit_jobs_claim;

ALTER INDEX queue.ix_audit_jobs_claim_new RENAME TO ix_audit_jobs_claim;

ALTER TABLE queue.audit_jobs DROP CONSTRAINT ck_audit_jobs_state;

ALTER TABLE queue.audit_jobs ADD CONSTRAINT ck_audit_jobs_state CHECK (state IN ('created', 'active', 'processing', 'completed', 'failed', 'cancelled'));

ALTER TABLE queue.audit_jobs ADD COLUMN result JSONB;

CREATE TABLE queue.audit_jobs_paused (
    topic TEXT NOT NULL, 
    paused_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT audit_jobs_paused_pkey PRIMARY KEY (topic)
);

CREATE INDEX IF NOT EXISTS ix_audit_jobs_cancelled ON queue.audit_jobs (topic, finished_at) WHERE state = 'cancelled';

CREATE INDEX IF NOT EXISTS ix_audit_jobs_history ON queue.audit_jobs (topic, id) WHERE state IN ('completed', 'failed', 'cancelled');

CREATE SCHEMA IF NOT EXISTS queue;

DROP INDEX queue.ix_audit_jobs_history;

DROP INDEX queue.ix_audit_jobs_cancelled;

DROP TABLE queue.audit_jobs_paused;

ALTER TABLE queue.audit_jobs DROP COLUMN result;

UPDATE queue.audit_jobs SET state='failed', attributes=(queue.audit_jobs.attributes || CAST('{"cancelled": true}' AS JSONB)) WHERE queue.audit_jobs.state = 'cancelled';

ALTER TABLE queue.audit_jobs DROP CONSTRAINT ck_audit_jobs_state;

ALTER TABLE queue.audit_jobs ADD CONSTRAINT ck_audit_jobs_state CHECK (state IN ('created', 'active', 'processing', 'completed', 'failed'));

DROP INDEX queue.uq_audit_jobs_unique_key;

CREATE INDEX ix_audit_jobs_claim_new ON queue.audit_jobs (topic, start_after, id) WHERE state IN ('created', 'active');

DROP INDEX IF EXISTS queue.ix_audit_jobs_claim;

ALTER INDEX queue.ix_audit_jobs_claim_new RENAME TO ix_audit_jobs_claim;

ALTER TABLE queue.audit_jobs DROP COLUMN unique_states, DROP COLUMN unique_key, DROP COLUMN priority;

ALTER TABLE queue.audit_jobs RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor);

DROP INDEX queue.ix_audit_jobs_failed;

DROP INDEX queue.ix_audit_jobs_processing;

DROP TABLE queue.audit_jobs;
