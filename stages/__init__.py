"""The domain: signal, trading and reporting stages plus what they share. Never imports Prefect."""
