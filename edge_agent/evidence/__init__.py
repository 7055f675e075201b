"""Evidence bundles: the files that prove a violation, hashed, chained and signed by the box.

`bundle` writes them (`DATA_DIR/evidence/<id>/`), `verify` checks one bundle or the whole
chain, `publish` sends a bundle to the bureau.
"""
