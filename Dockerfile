# ztbridge container image: the same `ztbridge up` as `make up`, data under /data.

# The OHIF viewer's built dist/ (npm @ohif/app, pinned by portal/viewer/package-lock.json),
# fetched in a throwaway stage: the image gets OHIF's files, not node. Never rebuilt.
FROM node:20-bookworm-slim AS viewer
WORKDIR /viewer
COPY portal/viewer/package.json portal/viewer/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm

RUN useradd --system --home-dir /data --create-home ztbridge
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY gateway ./gateway
COPY dicom_scp ./dicom_scp
COPY portal ./portal
COPY --from=viewer /viewer/node_modules/@ohif/app/dist ./portal/viewer/node_modules/@ohif/app/dist
COPY ztbridge ./ztbridge
# The registry contract's committed artifact (ABI + bytecode), read from beside the packages.
COPY contracts/build ./contracts/build
# Editable, so the packages stay beside contracts/build (gateway/ledger/artifact.py).
RUN pip install --no-cache-dir -c constraints.txt -e '.[server]'

USER ztbridge
ENV ZTBRIDGE_HOME=/data \
    ZTBRIDGE_DICOM__HOST=0.0.0.0 \
    ZTBRIDGE_DICOM__PORT=11112 \
    ZTBRIDGE_TLS__PORT=2762
VOLUME ["/data"]
EXPOSE 11112 2762 8443
ENTRYPOINT ["ztbridge"]
CMD ["up"]
