"""The compute layer: pure numpy / torch, never datajoint. One folder per stage of the schema, each
beneath its schema module (experiment, predictive, similarity, classifier, evaluation), and `common/`,
the plumbing every stage shares. A stage imports only `common/` and the stages before it;
`kernelcheck.py`, which runs every stage's networks, sits above them all."""
