-- Missive schema for MariaDB. Timestamps are Unix milliseconds (BIGINT) so both backends
-- store and compare them the same way.

CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username      VARCHAR(32)  NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    created_at    BIGINT       NOT NULL,
    -- Two racing signups for one name: the second INSERT fails here, never both succeed.
    UNIQUE KEY users_username (username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE messages (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    text       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    -- Serves "this user's messages, newest first, before cursor X" as one range scan.
    KEY messages_user_id_id (user_id, id),
    CONSTRAINT messages_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The search index: one row per distinct lower-cased word of a message. A prefix query is
-- a range scan on (user_id, token): token >= 'hel' AND token < 'hel' || U+10FFFF.
-- We keep our own token table instead of InnoDB FULLTEXT because FULLTEXT ignores words
-- shorter than innodb_ft_min_token_size (3) and stopwords, so `메시` or `hi` would never
-- match; this index behaves the same on MariaDB and SQLite.
CREATE TABLE message_tokens (
    user_id    BIGINT      NOT NULL,
    token      VARCHAR(64) NOT NULL,
    message_id BIGINT      NOT NULL,
    PRIMARY KEY (user_id, token, message_id),
    KEY message_tokens_message_id (message_id),
    CONSTRAINT message_tokens_message_fk FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE idempotency_keys (
    user_id    BIGINT       NOT NULL,
    idem_key   VARCHAR(255) NOT NULL,
    response   TEXT         NOT NULL,
    created_at BIGINT       NOT NULL,
    PRIMARY KEY (user_id, idem_key),
    CONSTRAINT idempotency_keys_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = ascii COLLATE = ascii_bin;
