"""The generative families, one file each (autoencoder, vae, gan, flow, diffusion), the shared network
pieces (networks.py), what every family offers (contract.py) and the registry that builds them (registry.py)."""
