from edgellm.cli import app

app()
