-- Search tokens are now made from NFC-normalised text (docs/search/tokens.json). Tokens
-- of messages indexed before were made from the text as sent: `missive migrate` re-indexes
-- the messages whose text is not NFC, then sets the version to 2.
CREATE TABLE search_index (
    version INT NOT NULL
) ENGINE = InnoDB;
INSERT INTO search_index (version) VALUES (1);
