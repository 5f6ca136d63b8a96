"""Consortium ledger: contracts, the embedded ledger, identities, the Fabric network and its Gateway client."""
