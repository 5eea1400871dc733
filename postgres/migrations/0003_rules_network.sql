-- Sale rules (seckill.SaleRules: eligibility and allocation) as one JSON
-- document per item, and the network an account registered from
-- (seckill.User.Network: the /24 or /48 the edge saw; '' for accounts made
-- in bulk or before networks were recorded).
ALTER TABLE items ADD COLUMN rules jsonb NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN network text NOT NULL DEFAULT '';
