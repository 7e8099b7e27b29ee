-- Transactional outbox: an event is written in the same transaction as the state change
-- it describes, then published to the event transport and marked sent.
CREATE TABLE outbox (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    -- The CloudEvent's id: rows are marked sent by it, so a batch of rows can be written
    -- with one multi-row INSERT (no per-row RETURNING).
    event_id   VARCHAR(64)  NOT NULL,
    -- The whole CloudEvent, JSON (structured mode), extensions included.
    event      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at    BIGINT NULL,
    -- The relay's scan: unsent rows in id order.
    KEY outbox_unsent (sent_at, id),
    UNIQUE KEY outbox_event_id (event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per lease; the relay that holds 'relay' is the only one publishing old rows, so
-- concurrent relays neither double-publish nor reorder.
CREATE TABLE outbox_lease (
    name       VARCHAR(32) NOT NULL PRIMARY KEY,
    holder     VARCHAR(64) NOT NULL,
    expires_at BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = ascii COLLATE = ascii_bin;
INSERT INTO outbox_lease (name, holder, expires_at) VALUES ('relay', '', 0);

-- Events a consumer has applied, for exactly-once effect under at-least-once delivery.
CREATE TABLE processed_events (
    source       VARCHAR(255) NOT NULL,
    event_id     VARCHAR(255) NOT NULL,
    processed_at BIGINT       NOT NULL,
    PRIMARY KEY (source, event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
