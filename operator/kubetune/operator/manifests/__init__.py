"""Pure builders of the children's manifests (plain dicts): small pieces composed per kind."""
