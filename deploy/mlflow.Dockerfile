# The MLflow tracking server of docker-compose.yml: the official image (MLflow alone) plus
# the PostgreSQL drivers for the backend store and boto3 for the MinIO artifact store. SQLAlchemy 2.1
# reads postgresql:// as psycopg (3), 2.0 as psycopg2: both are installed, whichever the image has.
# (From MLflow 3.9 on, ghcr.io/mlflow/mlflow:v<version>-full ships both and much more.)
ARG MLFLOW_VERSION=3.17.2
FROM ghcr.io/mlflow/mlflow:v${MLFLOW_VERSION}
RUN pip install --no-cache-dir "psycopg[binary]>=3.1,<4" "psycopg2-binary>=2.9,<3" "boto3>=1.34,<2"
