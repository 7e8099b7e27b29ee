-- Nothing to change on SQLite (TEXT is always UTF-8); kept so both backends have the same
-- migration versions.
SELECT 1;
