"""The pure core: people, policy, plans and the life of a credential. No I/O."""
