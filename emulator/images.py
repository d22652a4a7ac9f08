"""(being written)"""
def register_public_images(ctx):
    pass
