"""Models over gold features: churn and customer lifetime value."""
