"""Two-way talk (双向对讲): the bureau's recorded voice on the speaker, the crew's reply, `listen`."""
