"""(being written)"""
def create_default_group(ctx, vpc_id):
    pass
