"""`python -m lambda_hat ...`: see lambda_hat.app."""

from lambda_hat.app import main

if __name__ == "__main__":
    main()
