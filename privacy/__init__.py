"""Privacy core: differentially private local training (Opacus) and CKKS aggregation (TenSEAL). No I/O."""
