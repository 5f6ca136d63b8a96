"""The one-machine harness: plays every organisation's part locally for `carefed demo`, the benchmarks and the
end-to-end tests (identities, key ceremony, nodes, consents, votes, a SuperLink and the SuperNodes). The only
package that imports both sides (docs/architecture.md)."""
