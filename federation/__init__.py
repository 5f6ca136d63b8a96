"""What the consortium and the hospitals share, and nothing either side owns: the round's messages, the model
spec and artefact, the state-directory layout and the Flower process runtime (docs/architecture.md)."""
