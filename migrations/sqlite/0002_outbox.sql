-- Mirrors migrations/mysql/0002_outbox.sql (see the comments there).
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    sent_at    INTEGER
);
CREATE INDEX outbox_unsent ON outbox (sent_at, id);
CREATE UNIQUE INDEX outbox_event_id ON outbox (event_id);

CREATE TABLE outbox_lease (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
INSERT INTO outbox_lease (name, holder, expires_at) VALUES ('relay', '', 0);

CREATE TABLE processed_events (
    source       TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (source, event_id)
) WITHOUT ROWID;
