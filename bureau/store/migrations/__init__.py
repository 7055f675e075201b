"""PostgreSQL schema migrations, applied in order by `edge-bureau migrate` (NNNN_name.sql)."""
