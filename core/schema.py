"""The SQLite schema, as numbered migrations applied in order (core/store.py runs them)."""

from __future__ import annotations

# Each entry moves the schema up one version; never edit a released entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE spaces (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        revision INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        space_id INTEGER NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
        sha256 TEXT NOT NULL,
        ext TEXT NOT NULL,
        name TEXT NOT NULL,
        uploader TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        duration REAL NOT NULL,
        created_at REAL NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        embedding BLOB NOT NULL,
        UNIQUE (space_id, sha256)
    );
    CREATE INDEX samples_sha ON samples(sha256);
    CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
        start REAL NOT NULL,
        end REAL NOT NULL,
        embedding BLOB NOT NULL
    );
    CREATE INDEX segments_sample ON segments(sample_id);
    CREATE TABLE tags (
        sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        auto INTEGER NOT NULL DEFAULT 0,
        score REAL,
        PRIMARY KEY (sample_id, tag)
    );
    CREATE TABLE file_ids (
        sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
        platform TEXT NOT NULL,
        file_id TEXT NOT NULL,
        PRIMARY KEY (sample_id, platform)
    );
    CREATE TABLE space_labels (
        space_id INTEGER NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        PRIMARY KEY (space_id, label)
    );
    CREATE TABLE text_cache (
        model TEXT NOT NULL,
        text TEXT NOT NULL,
        embedding BLOB NOT NULL,
        PRIMARY KEY (model, text)
    );
    CREATE VIRTUAL TABLE samples_fts USING fts5(
        name, description, tags, tokenize = 'porter unicode61 remove_diacritics 2'
    );
    """,
    # v2: sample ids are never reused (AUTOINCREMENT); the table is rebuilt with foreign keys off (see _migrate).
    """
    CREATE TABLE samples_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        space_id INTEGER NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
        sha256 TEXT NOT NULL,
        ext TEXT NOT NULL,
        name TEXT NOT NULL,
        uploader TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        duration REAL NOT NULL,
        created_at REAL NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        embedding BLOB NOT NULL,
        UNIQUE (space_id, sha256)
    );
    INSERT INTO samples_v2 SELECT * FROM samples;
    DROP TABLE samples;
    ALTER TABLE samples_v2 RENAME TO samples;
    CREATE INDEX samples_sha ON samples(sha256);
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'samples', max(coalesce((SELECT max(id) FROM samples), 0),
                              coalesce((SELECT max(rowid) FROM samples_fts), 0));
    """,
    # v3: landmark fingerprints of each sample, written with it (core/fingerprint.py; older samples are backfilled)
    """
    CREATE TABLE fingerprints (
        sample_id INTEGER PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
        data BLOB NOT NULL
    );
    """,
    # v4: the adapters' inbox (core/inbox.py): each request taken on, journaled before the platform is told.
    """
    CREATE TABLE inbox (
        platform TEXT NOT NULL,
        key TEXT NOT NULL,
        received_at REAL NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
        attempts INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (platform, key)
    );
    CREATE INDEX inbox_state ON inbox(state, platform, received_at);
    """,
    # v5: searches kept for paging across restarts; bounded and expiring (see save_query). Depends on no other table.
    """
    CREATE TABLE IF NOT EXISTS queries (
        id TEXT PRIMARY KEY,
        spaces TEXT NOT NULL,
        vector BLOB NOT NULL,
        text TEXT NOT NULL DEFAULT '',
        k INTEGER NOT NULL,
        title TEXT NOT NULL,
        exclude INTEGER,
        created_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS queries_created ON queries(created_at);
    """,
    # v6: the change log (core/changes.py): one entry per revision of a space, so an index catches up incrementally.
    """
    CREATE TABLE IF NOT EXISTS changes (
        space_id INTEGER NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
        revision INTEGER NOT NULL,
        sample_id INTEGER NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('add', 'remove', 'reset')),
        PRIMARY KEY (space_id, revision)
    ) WITHOUT ROWID;
    """,
)
