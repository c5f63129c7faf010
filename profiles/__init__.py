"""Device profiles as JSON data (installed as edgert.profiles): datasheet priors and measured profiles."""
