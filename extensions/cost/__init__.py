"""What things cost: the ledger of servers, apps and job runs, and the ``cost`` hub service."""
