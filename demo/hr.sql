-- The demo HR database. `cargo run --example make-demo-db` builds demo/hr.db from this script.
CREATE TABLE departments (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  DATETIME
);
CREATE TABLE employees (
    employee_id INTEGER PRIMARY KEY,
    first_name  TEXT NOT NULL,
    last_name   TEXT NOT NULL,
    email       TEXT UNIQUE,
    department  TEXT REFERENCES departments(code),
    hired_on    DATE,
    active      BOOLEAN NOT NULL DEFAULT 1,
    salary      DECIMAL(10, 2)
);
CREATE TABLE badges (
    badge_id    UUID PRIMARY KEY,
    employee_id INTEGER NOT NULL REFERENCES employees(employee_id),
    photo       BLOB
);
INSERT INTO departments VALUES
    ('ENG', 'Engineering', '2019-03-01 09:00:00'),
    ('FIN', 'Finance, "Treasury" & Tax', '2020-07-15 14:30:00.250'),
    ('OPS', 'Opérations', NULL);
INSERT INTO employees VALUES
    (1001, 'Zoë', 'O''Brien', 'zoe.obrien@example.com', 'ENG', '2021-09-01', 1, 81250.50),
    (1002, 'José', 'Müller', 'jose.muller@example.com', 'FIN', '2019-01-15', 1, 64000),
    (1003, 'Ann', 'Smith, PhD', NULL, 'OPS', '2023-02-28', 0, NULL),
    (1004, '李', '小龙', 'li@example.com', 'ENG', NULL, 1, 0.1),
    (1005, 'Empty', '', '', NULL, NULL, 1, -12.75);
INSERT INTO badges VALUES
    ('6f1c2b9e-3f4a-4c6d-9e8f-0a1b2c3d4e5f', 1001, X'89504E470D0A1A0A'),
    ('0b7d4a2c-8e1f-4a3b-b5c6-d7e8f9a0b1c2', 1002, NULL);
