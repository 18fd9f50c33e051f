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

CREATE SCHEMA IF NOT EXISTS queue;

ALTER TABLE queue.audit_jobs RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor);

DROP INDEX queue.ix_audit_jobs_failed;

DROP INDEX queue.ix_audit_jobs_processing;

DROP TABLE queue.audit_jobs;
