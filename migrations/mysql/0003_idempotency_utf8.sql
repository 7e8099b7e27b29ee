-- The stored response holds the message text, which is any Unicode: the table's ASCII
-- default made an idempotent post of Korean or emoji fail with 1366 "Incorrect string
-- value". Keys stay ASCII (the API only accepts visible ASCII keys).
ALTER TABLE idempotency_keys
    MODIFY response TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL;
