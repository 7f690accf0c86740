"""Training recipes as YAML data (see resnetkit.train.recipe.Recipe for the fields)."""
