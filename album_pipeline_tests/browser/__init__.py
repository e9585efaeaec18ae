"""The Dagster and MLflow UIs as a user sees them: headless chromium driven by Playwright."""
