CREATE TABLE IF NOT EXISTS shop_orders (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL,
    total_cents integer NOT NULL,
    status      text NOT NULL DEFAULT 'new',  -- new, paid, cancelled
    receipt     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS shop_emails (
    id        bigserial PRIMARY KEY,
    recipient text NOT NULL,
    subject   text NOT NULL
);
