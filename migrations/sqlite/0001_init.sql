-- Missive schema for SQLite; mirrors migrations/mysql/0001_init.sql (see the comments
-- there). Text compares with BINARY collation, i.e. by code point, as utf8mb4_bin does.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_username ON users (username);

-- AUTOINCREMENT: ids are never reused, so a cursor never points at a newer message.
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    text       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX messages_user_id_id ON messages (user_id, id);

CREATE TABLE message_tokens (
    user_id    INTEGER NOT NULL,
    token      TEXT    NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, token, message_id)
) WITHOUT ROWID;
CREATE INDEX message_tokens_message_id ON message_tokens (message_id);

CREATE TABLE idempotency_keys (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idem_key   TEXT    NOT NULL,
    response   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, idem_key)
) WITHOUT ROWID;
