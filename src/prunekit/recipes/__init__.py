"""Recipes: YAML files of `stages:`, each `{method: NAME, ...}` validated by that method's config."""

from prunekit.recipes.schema import Recipe, Stage, build_config, load_recipe, parse_recipe

__all__ = ["Recipe", "Stage", "build_config", "load_recipe", "parse_recipe"]
