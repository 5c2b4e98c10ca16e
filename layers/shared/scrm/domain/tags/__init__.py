"""Corp customer tags."""
