"""The Dagster shell: assets, resources and jobs that wire the core together. Only this package imports Dagster."""
