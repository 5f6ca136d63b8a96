"""Hospital node: data input and validation, pseudonyms, consent filter, local DP training, Flower ClientApp."""
